"""A peer for benches/throughput.rs: Dramatiq consuming no-op jobs from RabbitMQ, as
`drover work` does (BENCHMARKS.md, "Worker throughput").

    python dramatiq_peer.py enqueue N     publishes N no-op messages to $BENCH_QUEUE
    dramatiq --processes 2 --threads 1 dramatiq_peer
                                          consumes them (dramatiq_queue_prefetch=1 for prefetch 1)

The broker is $DROVER_AMQP_URL (the loopback guest login by default). Versions are pinned in
requirements.lock; benches/peers/setup.sh installs them into a virtual environment."""
import os
import sys

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

URL = os.environ.get("DROVER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
QUEUE = os.environ.get("BENCH_QUEUE", "bench_dramatiq")

dramatiq.set_broker(RabbitmqBroker(url=URL))


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def noop():
    pass


if __name__ == "__main__":
    if sys.argv[1:2] == ["enqueue"]:
        for _ in range(int(sys.argv[2])):
            noop.send()
        dramatiq.get_broker().close()
    else:
        sys.exit(__doc__)
