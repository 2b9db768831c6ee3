"""Payment security: sign-in throttling and lockout, rate limits, security headers, log redaction,
the hash-chained audit log, field-key rotation and personal data export and deletion."""
