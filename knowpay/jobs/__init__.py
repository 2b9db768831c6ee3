"""Background jobs: the Huey queue, the tasks it runs and the `knowpay worker` consumer.

This package is the only place that knows the queue; every task calls a service function.
"""
