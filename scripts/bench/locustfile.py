"""Load for `scripts/bench.sh deploy`: fixtures/orders-api as a played pod.

Closed loop (no wait between requests), so requests per second measure the service, not
the think time: mostly reads of one order, health checks, and a few inserts (SQLite
writes, serialised by its lock).
"""

from locust import HttpUser, constant, task


class OrdersUser(HttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        r = self.client.post("/orders", json={"item": "seed", "quantity": 1}, name="/orders [POST]")
        self.order_id = r.json()["id"]

    @task(10)
    def read_order(self) -> None:
        self.client.get(f"/orders/{self.order_id}", name="/orders/[id]")

    @task(5)
    def health(self) -> None:
        self.client.get("/health")

    @task(1)
    def create_order(self) -> None:
        self.client.post("/orders", json={"item": "tea", "quantity": 2}, name="/orders [POST]")
