"""Uploads -> model inputs, off the head's thread and within each request's deadline.

    request coroutine   decode(images, config, deadline) -> wait for its images, at most until the deadline
    decode threads      each image: Pillow's header -> the decoded-size budget -> decode -> the model's input
                        (head_runner.ModelInput.load)

Decoding runs on a pool of its own, never on the head's thread, so a slow decode delays no other
request's head run. Its cost is bounded before it starts: an image whose decoded size, judged from
its header, is over ``max_decoded_bytes`` is refused (shared.preprocess.ImageTooLarge, 413) without
a pixel decoded, so what a decode may take is capped by the budget (under a second and a few hundred
megabytes at the default). A request whose deadline passes first gets HeadTimeout (504) at the
deadline: its decodes not started yet are dropped, and one already running is abandoned, to finish
within that cap with nobody waiting for it.

Whenever the last running decode finishes, the memory the decodes freed is handed back to the system
(glibc's malloc_trim): the C library would otherwise keep it for reuse, and a burst of large images
would leave the device's resident memory hundreds of megabytes above where it was.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from time import perf_counter

from spikebottlenet.shared.model_config import ModelConfig
from spikebottlenet.shared.preprocess import ImageError

from .deadline import Deadline
from .head_queue import HeadTimeout
from .head_runner import ModelInput

# Two threads: one slow decode does not hold up every other upload's, and with the head's thread they keep within
# a small device's cores (Pillow's decoders and numpy release the GIL, so these run beside the event loop).
DECODE_THREADS = 2


def _malloc_trim() -> Callable[[], None]:
    """glibc's malloc_trim(0): free memory of every arena back to the system; nothing where the C library has no
    such call (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0)


release_free_memory = _malloc_trim()


@dataclass(frozen=True)
class Decoded:
    """One request's images: a model input for each readable one, an error for the others."""

    inputs: dict[int, ModelInput]  # image index -> its model input
    errors: dict[int, ImageError]  # image index -> why it cannot be read
    ms: float  # from the request's first image queued to its last decoded


class Decoder:
    def __init__(self, max_decoded_bytes: int, threads: int = DECODE_THREADS) -> None:
        self.max_decoded_bytes = max_decoded_bytes
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode")
        self._running = 0  # decodes on the threads now
        self._lock = threading.Lock()

    async def decode(self, images: list[bytes], config: ModelConfig, deadline: Deadline) -> Decoded:
        """Every image as ``config``'s model input, or the ImageError that says why not; raises HeadTimeout when
        the deadline passes first."""
        loop = asyncio.get_running_loop()
        start = perf_counter()
        # cancelled at the deadline, gather cancels each decode: one not started never runs
        decodes = asyncio.gather(*(loop.run_in_executor(self._executor, self._load, image, config) for image in images))
        try:
            results = await asyncio.wait_for(decodes, deadline.remaining())
        except TimeoutError:
            raise HeadTimeout(f"the {deadline.budget_s:g} s deadline passed while the upload was decoded") from None
        ms = (perf_counter() - start) * 1e3
        return Decoded(
            {i: r for i, r in enumerate(results) if isinstance(r, ModelInput)},
            {i: r for i, r in enumerate(results) if isinstance(r, ImageError)},
            ms,
        )

    def _load(self, image: bytes, config: ModelConfig) -> ModelInput | ImageError:
        with self._lock:
            self._running += 1
        try:
            return ModelInput.load(image, config, self.max_decoded_bytes)
        except ImageError as e:  # returned, not raised: one unreadable image of a batch fails only its own entry
            return e
        finally:
            with self._lock:
                self._running -= 1
                idle = self._running == 0
            if idle:  # about 0.01 ms when there is nothing to give back
                release_free_memory()

    def close(self) -> None:
        """Stop the threads once the decodes they run now are done; queued ones never start."""
        self._executor.shutdown(wait=False, cancel_futures=True)
