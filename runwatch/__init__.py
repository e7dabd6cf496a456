"""runwatch: folders as a front end for the Runway generative-media API.

Control flow in one sentence: inbox -> request -> media -> api -> journal/scheduler -> outbox.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
