"""Fleet planning: one job per battery on a RabbitMQ work queue, competing consumers solve them."""
