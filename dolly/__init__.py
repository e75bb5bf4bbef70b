"""The core that the Chat tab (space/), the Explorer (explorer/) and training (train/) share.

It imports none of them: the prompt contract (prompt.py), the one rule for "local path or Hub id"
(source.py), loading dolly-15k-shaped data (data.py) and loading anything in the background
(background.py).
"""
