"""The job lifecycle: states and their one transition table, typed events, pure decisions, and the engine.

Read bottom-up: ``states`` (what a job can be) → ``job`` (the record) → ``events`` (what comes back from work)
→ ``lifecycle`` (an answer in, an outcome out) → ``book`` (the one way a job changes state) → ``runner``
(the pool) → ``commands``, ``recovery`` → ``engine`` (the loop).
"""
