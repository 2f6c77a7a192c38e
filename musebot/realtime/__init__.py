"""Real-time plumbing of ``musebot serve``: ports, scheduler, note ledger, call and response.

Threads live only in this package and talk through queues; every timestamp comes from one clock
(:func:`musebot.realtime.clock.now`). Nothing here imports torch.
"""
