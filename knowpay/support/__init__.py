"""Customer service on payment data: tickets on orders, the payment assistant, the FAQ."""
