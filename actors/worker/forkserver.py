"""Imported once, by name, inside the fork server (its preload list), never by the supervisor.

It makes the fork server a child subreaper: descendants orphaned by a killed worker are
re-parented to it and reaped by its SIGCHLD loop, so a timeout kill leaves no zombie behind.
"""

import warnings

from .main import become_subreaper

become_subreaper()
warnings.filterwarnings("ignore", message="forkserver: waitpid returned unexpected pid")
