"""KnowPay: the money side of a knowledge-paid platform."""

__version__ = "0.1.0"
