"""Virtual ECU for the bench: a UDS server (bootloader + application) on ISO-TP.

``VirtualEcu(config, bus).start()`` in tests; ``icv-hil ecu-sim --config FILE`` standalone.
"""

from hil.ecu_sim.faults import Fault
from hil.ecu_sim.server import VirtualEcu
from hil.ecu_sim.settings import SimConfig, VirtualEcuConfig, load_sim_config

__all__ = ["Fault", "SimConfig", "VirtualEcu", "VirtualEcuConfig", "load_sim_config"]
