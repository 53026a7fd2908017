"""Data-parallel training with torch.distributed (gloo on CPU, NCCL on GPU).

Every rank holds the whole model and trains on its slice of each *global* batch
(``batch_size`` samples per rank, drawn from one permutation shared by all
ranks). Losses are summed over samples (MmNas), so summing the gradients across
ranks makes N ranks with batch b take exactly the step one process takes with
batch N*b. Only rank 0 writes files and logs.

Processes come from ``launch`` (``nas retrain --nproc N``) or from ``torchrun``,
which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nas.errors import UserError

__all__ = ["World", "SINGLE", "world_from_env", "init_world", "close_world", "launch", "main_first", "rank_device", "sum_gradients",
           "sum_scalars", "gather_lists", "broadcast_object"]


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()
LOCAL_LAUNCH = "VLNAS_LOCAL_LAUNCH"  # set by launch(): this machine's ranks, rendezvous on 127.0.0.1


def world_from_env() -> World:
    """The world torchrun (or ``launch``) describes in the environment; one process otherwise."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return SINGLE
    return World(rank=int(os.environ["RANK"]), size=int(os.environ["WORLD_SIZE"]),
                 local_rank=int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))


def init_world(world: World, device: torch.device) -> None:
    """Join the process group (no-op for one process)."""
    if not world.distributed or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if os.environ.get(LOCAL_LAUNCH) == "1":
        dist.init_process_group(backend, store=_loopback_store(world), rank=world.rank, world_size=world.size)
        return
    dist.init_process_group(backend, rank=world.rank, world_size=world.size)


def _loopback_store(world: World) -> dist.TCPStore:
    """The rendezvous store of a ``--nproc`` run, listening on 127.0.0.1 only (torch's own binds every
    interface, and ranks exchange pickled objects through the process group)."""
    port = int(os.environ["MASTER_PORT"])
    if not world.is_main:
        return dist.TCPStore("127.0.0.1", port, world.size, is_master=False)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(world.size)
    store = dist.TCPStore("127.0.0.1", port, world.size, is_master=True, master_listen_fd=listener.detach(),
                          use_libuv=False)
    return store


def rank_device(device: torch.device, world: World) -> torch.device:
    """Each rank its own GPU (by local rank) when the run asks for CUDA."""
    if device.type == "cuda" and world.distributed:
        if world.local_rank >= torch.cuda.device_count():
            raise UserError(f"{world.size} processes need {world.size} GPUs and this machine has "
                            f"{torch.cuda.device_count()}; use fewer, or train.device=cpu for gloo on CPU")
        return torch.device("cuda", world.local_rank)
    return device


@contextmanager
def main_first(world: World) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. generating a dataset or a vocabulary), then the others."""
    if world.distributed and not world.is_main:
        dist.barrier()
    try:
        yield
    finally:
        if world.distributed and world.is_main:
            dist.barrier()


def close_world() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _child(local_rank: int, nproc: int, port: int, errors: str, target: Callable[..., Any], args: tuple) -> None:
    os.environ.update({"RANK": str(local_rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(nproc),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), LOCAL_LAUNCH: "1"})
    if sys.platform.startswith("linux"):  # gloo's own connections on loopback as well ("lo0" elsewhere)
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    try:
        target(*args)
    except UserError as error:
        # A user mistake: the parent prints it as one line, so this rank only leaves it behind.
        Path(errors, f"rank{local_rank}.error").write_text(str(error))
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
    finally:
        close_world()


def launch(nproc: int, target: Callable[..., Any], *args: Any) -> None:
    """Run ``target(*args)`` in ``nproc`` processes on this machine, bound to 127.0.0.1.

    A UserError on any rank comes back as this process's UserError, with the rank's message.
    """
    if nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {nproc}")
    # torch logs a warning for each sibling it stops after one rank fails; the error says enough.
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
    # Ctrl-C reaches every rank of the terminal's process group; the ranks stop together at a step
    # boundary and save, so this launcher ignores it and waits for them.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
    with tempfile.TemporaryDirectory(prefix="vlnas-ranks-") as errors:
        try:
            mp.start_processes(_child, args=(nproc, _free_port(), errors, target, args), nprocs=nproc, join=True,
                               start_method="spawn")
        except mp.ProcessExitedException as error:
            if error.exit_code == 130:
                raise KeyboardInterrupt from None
            messages = sorted(Path(errors).glob("rank*.error"))
            if messages:
                raise UserError(messages[0].read_text()) from None
            raise UserError(f"rank {error.error_index} exited with code {error.exit_code} "
                            "(its traceback is above)") from None
        finally:
            if main_thread:
                signal.signal(signal.SIGINT, previous)


def sum_gradients(parameters: Iterable[torch.nn.Parameter], world: World) -> None:
    """All-reduce (sum) the gradients of ``parameters`` in one flat buffer per dtype.

    Parameters without a gradient stay without one; every rank runs the same path (shared
    seeds), so all ranks agree on which parameters those are.
    """
    if not world.distributed:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for grad in grads:
        by_dtype.setdefault(grad.dtype, []).append(grad)
    for group in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for grad in group:
            grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
            offset += grad.numel()


def sum_scalars(values: list[float], world: World, device: torch.device) -> list[float]:
    """Each value summed over ranks, in one all-reduce."""
    if not world.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def gather_lists(items: list[Any], world: World) -> list[Any]:
    """Every rank's list, concatenated in rank order (on every rank)."""
    if not world.distributed:
        return items
    parts: list[Any] = [None] * world.size
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


def broadcast_object(value: Any, world: World) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
