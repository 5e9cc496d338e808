"""Recurrent layers with torch.nn.LSTM's conventions: ORGaNICs and the rival stable RNNs, for use in your own models.

    layer = ORGaNICsLayer(input_size, hidden_size, batch_first=True)
    outputs, state = layer(x)          # x (batch, time, input_size); outputs (batch, time, hidden_size)
    outputs, state = layer(x, state)   # continue from a state (a NamedTuple: ORGaNICsState(y, a, b, b0))

Every layer takes (input_size, hidden_size, <its cell's settings>, batch_first=False) (the SSN: n_excitatory and
n_inhibitory, hidden_size = their sum) and returns (outputs after every step, final state); the state argument is
optional (default: the cell's initial state). What each outputs:

| layer | outputs per step | state |
|---|---|---|
| `ORGaNICsLayer` | principal neurons y | `ORGaNICsState(y, a, b, b0)` |
| `CoRNNLayer` | positions y | `CoRNNState(y, z)` |
| `LipschitzRNNLayer` | h | `LipschitzRNNState(h)` |
| `AntisymmetricRNNLayer` | h | `AntisymmetricRNNState(h)` |
| `SSNLayer` | firing rates k [u]+^power, E neurons first | `SSNState(u)` (voltages) |

ORGaNICs runs in its sequence engine (a native time loop on the CPU) and the SSN in the torch form of its engine, each
with a backward through time that takes the outputs' gradients at every step; the three rivals run their step loop
under autograd. These are the cells of the benchmark's classifiers (`organics_bench.models`), which add a readout.
"""

from organics_bench.models.base import RecurrentLayer
from organics_bench.models.organics import ORGaNICsLayer, ORGaNICsState
from organics_bench.models.ssn import SSNLayer, SSNState
from organics_bench.models.stable_rnns import (
    AntisymmetricRNNLayer,
    AntisymmetricRNNState,
    CoRNNLayer,
    CoRNNState,
    LipschitzRNNLayer,
    LipschitzRNNState,
)

__all__ = [
    "AntisymmetricRNNLayer",
    "AntisymmetricRNNState",
    "CoRNNLayer",
    "CoRNNState",
    "LipschitzRNNLayer",
    "LipschitzRNNState",
    "ORGaNICsLayer",
    "ORGaNICsState",
    "RecurrentLayer",
    "SSNLayer",
    "SSNState",
]
