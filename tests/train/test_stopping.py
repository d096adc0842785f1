"""Stopper's signal handling: a second Ctrl-C aborts at once, except the copy torchrun relays."""
import signal

import pytest

from qtrain.train.distributed import Dist
from qtrain.train.stopping import Stopper


def test_a_second_ctrl_c_aborts_alone_but_not_the_one_torchrun_relays():
    alone = Stopper(minutes=0, d=Dist())
    alone._handle(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):
        alone._handle(signal.SIGINT, None)
    ranked = Stopper(minutes=0, d=Dist(rank=1, world_size=2, local_rank=1))
    ranked._handle(signal.SIGINT, None)
    ranked._handle(signal.SIGINT, None)  # the launcher's copy of the same Ctrl-C
    assert ranked.signum == signal.SIGINT
    ranked._at -= 10  # a real second Ctrl-C, seconds later
    with pytest.raises(KeyboardInterrupt):
        ranked._handle(signal.SIGINT, None)
