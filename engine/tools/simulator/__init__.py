"""A local stand-in for the WhatsApp Cloud API: the send endpoint, Meta-shaped signed
webhooks, WhatsApp's limits and signals on demand, and a record of what it accepted.
trio, cheap per request so it is never the bottleneck of a benchmark.

- `config`: `SimulatorConfig`, and per phone number id a `NumberBehaviour`.
- `cloud_api`: the send endpoint's answers; `limits`: throughput and messaging limit;
  `graph_errors`: the Graph error bodies.
- `webhooks`: statuses posted one per request, in order per message;
  `notifications`: the webhook bodies in Meta's shapes.
- `control`: the `/simulator/...` endpoints; `record`: what it accepted and rejected.
- `server`: `serve_simulator` (plain request heads read by
  engine/core/http1_request_head.py, h11 reads the others); `cli`:
  `campaign-engine simulator ...`.

In process: `handle = await nursery.start(serve_simulator, config)`, then read
`handle.state`. As a program: `main(argv)`.
"""

from engine.tools.simulator.cli import main, parse_args
from engine.tools.simulator.config import (
    ForcedError,
    NumberBehaviour,
    NumberUpdate,
    SimulatorConfig,
)
from engine.tools.simulator.record import (
    AcceptedSend,
    RecordedRequest,
    SimulatorState,
    SimulatorStats,
)
from engine.tools.simulator.server import SimulatorHandle, serve_simulator

__all__ = [
    "AcceptedSend",
    "ForcedError",
    "NumberBehaviour",
    "NumberUpdate",
    "RecordedRequest",
    "SimulatorConfig",
    "SimulatorHandle",
    "SimulatorState",
    "SimulatorStats",
    "main",
    "parse_args",
    "serve_simulator",
]
