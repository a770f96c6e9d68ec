"""Scale-out: which rooms the deployment wants (Redis), and which process observes each.

- `wanted.py`: the wanted set in Redis, fed by the static list, the admin API, webhooks,
  ListRooms reconciliation and the control stream;
- `leases.py` + `assigner.py`: one lease per room, so exactly one process observes it;
- `webhook.py`, `reconcile.py`, `control.py`: the sources; `filter.py`: what may be wanted.
"""
