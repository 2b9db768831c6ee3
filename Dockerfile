# KnowPay image: the same `knowpay` command runs web (`serve`) or jobs (`worker`).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 KNOWPAY_INSTANCE_PATH=/var/lib/knowpay
WORKDIR /opt/knowpay
COPY requirements.lock pyproject.toml README.md ./
COPY knowpay ./knowpay
RUN pip install --no-cache-dir -r requirements.lock && pip install --no-cache-dir --no-deps . \
    && useradd --system --home /var/lib/knowpay knowpay && mkdir -p /var/lib/knowpay \
    && chown knowpay /var/lib/knowpay
USER knowpay
EXPOSE 8000
CMD ["knowpay", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "4"]
