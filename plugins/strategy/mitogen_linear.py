"""The speed switch: Mitogen's linear strategy, reachable by name from this repository.

ansible.cfg adds this directory to `strategy_plugins`, so `ANSIBLE_STRATEGY=mitogen_linear` turns
Mitogen on for one run (or `strategy = mitogen_linear` in ansible.cfg for every run) without a
path into the virtualenv's site-packages. Mitogen (pinned in requirements.txt) keeps one Python
per host and runs each task's module in it, instead of starting a Python and compiling Ansible's
module code for every task. Off (the default) is Ansible's own linear strategy, the reference that
every molecule scenario runs; see README.md, "Faster runs".
"""

from ansible_mitogen.plugins.strategy.mitogen_linear import StrategyModule

__all__ = ["StrategyModule"]
