# TEMPORARY (replaced by the h/balancer branch at merge)
def balancer_state(client):
    status = client.admin.command("balancerStatus")
    return {"enabled": status.get("mode") != "off", "mode": status.get("mode"),
            "in_balancer_round": bool(status.get("inBalancerRound")), "migrations": [], "window": None}
