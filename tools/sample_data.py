#!/usr/bin/env python
"""Load a small sample dataset into the server at $MONGODB_URI (used by ``make demo``)."""

import datetime
import os
import random
import sys

import pymongo
from bson import Binary


def main():
    uri = os.environ.get("MONGODB_URI") or (sys.argv[1] if len(sys.argv) > 1 else None)
    if not uri:
        raise SystemExit("usage: MONGODB_URI=mongodb://... sample_data.py")
    client = pymongo.MongoClient(uri)
    rng = random.Random(42)
    shop = client.shop
    shop.customers.drop()
    shop.orders.drop()
    client.inventory.items.drop()
    shop.customers.insert_many([
        {"_id": i, "name": "customer %d" % i, "email": "c%d@example.com" % i,
         "since": datetime.datetime(2020, 1, 1) + datetime.timedelta(days=i),
         "tags": rng.sample(["gold", "silver", "new", "vip", "eu", "us"], 2)}
        for i in range(2000)])
    shop.customers.create_index("email", unique=True)
    shop.orders.insert_many([
        {"customer": rng.randrange(2000), "total_cents": rng.randrange(50000),
         "lines": [{"sku": "sku-%d" % rng.randrange(300), "qty": rng.randrange(1, 5)} for dummy in range(3)],
         "placed": datetime.datetime(2024, 1, 1) + datetime.timedelta(minutes=i)}
        for i in range(5000)])
    shop.orders.create_index([("customer", 1), ("placed", -1)])
    client.inventory.items.insert_many([
        {"_id": "sku-%d" % i, "stock": rng.randrange(1000), "photo": Binary(os.urandom(64))}
        for i in range(300)])
    counts = {ns: client[ns.partition(".")[0]][ns.partition(".")[2]].count_documents({})
              for ns in ("shop.customers", "shop.orders", "inventory.items")}
    print("sample data loaded: " + ", ".join("%s=%d" % kv for kv in sorted(counts.items())))


if __name__ == "__main__":
    main()
