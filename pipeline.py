"""Overlapped I/O for inference: decode ahead and write behind the model, in bounded queues.

    frames = prefetch(source_frames(source), depth=8)        # decoded in a thread, at most 8 ahead
    with Sink(lambda item: write_png(*item), depth=8) as sink:
        for item in produce(): sink.put(item)                 # written in a thread, at most 8 behind

Decoding (PyAV), PNG compression (OpenCV) and H.264 encoding (libx264) release the GIL, so the
stages run side by side on separate cores. Queues are bounded: no more than `depth` frames wait
at any stage, whatever the video length. An error in a worker is re-raised in the caller.
"""
import queue
import threading

_DONE = object()


class _Failed:
    def __init__(self, error):
        self.error = error


def prefetch(iterable, depth=8):
    """Iterate `iterable` in a background thread, `depth` items ahead; errors surface here."""
    items = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in iterable:
                if stop.is_set():
                    return
                items.put(item)
            items.put(_DONE)
        except BaseException as error:  # handed to the consumer, which re-raises it
            items.put(_Failed(error))

    worker = threading.Thread(target=produce, daemon=True, name="prefetch")
    worker.start()
    try:
        while (item := items.get()) is not _DONE:
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                items.get_nowait()
            except queue.Empty:
                worker.join(0.01)


class Sink:
    """Consume items with `write(item)` in a background thread; `put` blocks when `depth` wait."""

    def __init__(self, write, depth=8, name="sink"):
        self.write = write
        self.items = queue.Queue(maxsize=depth)
        self.error = None
        self.worker = threading.Thread(target=self._run, daemon=True, name=name)

    def _run(self):
        while (item := self.items.get()) is not _DONE:
            if self.error is None:
                try:
                    self.write(item)
                except BaseException as error:  # re-raised by the producer's next put or close
                    self.error = error

    def put(self, item):
        if self.error is not None:
            raise self.error
        self.items.put(item)

    def close(self):
        self.items.put(_DONE)
        self.worker.join()
        if self.error is not None:
            raise self.error

    def __enter__(self):
        self.worker.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:  # the caller failed: drain and stop without masking its error
            self.items.put(_DONE)
            self.worker.join()
