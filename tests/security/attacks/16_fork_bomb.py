"""The classic fork bomb: every process forks forever (a process whose fork is refused dies,
the others keep going).

verdict: process_limit
limits: processes=16
"""
import os

while True:
    os.fork()
