"""pipeline.prefetch and pipeline.Sink: items in order, at most `depth` waiting, a worker's error
raised in the caller, a caller's error never masked, and no thread left running when they end."""
import threading
import time

import pytest

import pipeline


def counted(n, pulled, fail_at=None):
    """0, 1, ..., n-1, appending each to `pulled` as it is taken; raises at `fail_at`."""
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"frame {i} cannot be decoded")
        pulled.append(i)
        yield i


def wait_until(condition, seconds=2.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def alive(name):
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


def test_prefetch_gives_every_item_in_order():
    assert list(pipeline.prefetch(iter(range(50)), depth=3)) == list(range(50))


def test_prefetch_reads_no_more_than_depth_items_ahead_of_the_consumer():
    pulled = []
    frames = pipeline.prefetch(counted(100, pulled), depth=2)
    try:
        assert next(frames) == 0
        time.sleep(0.2)  # time for a producer that is not held back to run far ahead
        assert len(pulled) <= 1 + 2 + 1  # the one consumed, a full queue, one waiting to be put
    finally:
        frames.close()


def test_prefetch_raises_the_sources_error_in_the_consumer_after_the_items_before_it():
    received = []
    with pytest.raises(ValueError, match="frame 3 cannot be decoded"):
        for item in pipeline.prefetch(counted(10, [], fail_at=3), depth=2):
            received.append(item)
    assert received == [0, 1, 2]


def test_a_consumer_that_stops_early_stops_the_reading_and_leaves_no_thread():
    pulled = []
    frames = pipeline.prefetch(counted(1000, pulled), depth=2)
    assert [next(frames) for _ in range(3)] == [0, 1, 2]
    frames.close()
    assert wait_until(lambda: not alive("prefetch")), "the prefetch thread is still running"
    assert len(pulled) <= 3 + 2 + 2
    time.sleep(0.1)
    assert len(pulled) <= 3 + 2 + 2


def test_sink_writes_every_item_in_order_before_the_block_ends():
    written = []

    def slow_write(item):
        time.sleep(0.002)
        written.append(item)
    with pipeline.Sink(slow_write, depth=2) as sink:
        for i in range(30):
            sink.put(i)
    assert written == list(range(30))


def test_sink_put_waits_while_depth_items_wait_to_be_written():
    release, written = threading.Event(), []

    def held_write(item):
        assert release.wait(5)
        written.append(item)
    with pipeline.Sink(held_write, depth=2) as sink:
        producer = threading.Thread(target=lambda: [sink.put(i) for i in range(20)], daemon=True)
        producer.start()
        producer.join(0.3)
        assert producer.is_alive(), "put did not wait for the writer"
        release.set()
        producer.join(5)
        assert not producer.is_alive()
    assert written == list(range(20))


def test_a_write_error_on_the_last_item_is_raised_when_the_sink_closes():
    def write(item):
        if item == 4:
            raise OSError(28, "No space left on device")
    with pytest.raises(OSError, match="No space left on device"):
        with pipeline.Sink(write, depth=2) as sink:
            for i in range(5):
                sink.put(i)


def test_after_a_write_error_nothing_more_is_written_and_the_next_put_raises_it():
    written, reached_the_end = [], False

    def write(item):
        written.append(item)
        time.sleep(0.05)  # items are queued behind the write that fails
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError, match="No space left on device"):
        with pipeline.Sink(write, depth=2) as sink:
            for i in range(200):
                sink.put(i)
                time.sleep(0.005)
            reached_the_end = True
    assert not reached_the_end and written == [0]


def test_a_failing_caller_keeps_its_own_error_over_a_write_error():
    failed = threading.Event()

    def write(item):
        failed.set()
        raise OSError(28, "No space left on device")
    with pytest.raises(ValueError, match="the model failed"):
        with pipeline.Sink(write, depth=2, name="failing-sink") as sink:
            sink.put(0)
            assert failed.wait(5)
            time.sleep(0.05)  # the write error is recorded by now
            raise ValueError("the model failed")
    assert not alive("failing-sink")


def test_when_the_caller_fails_the_items_it_queued_are_written_before_the_block_ends():
    written = []

    def slow_write(item):
        time.sleep(0.01)
        written.append(item)
    with pytest.raises(ValueError, match="the model failed"):
        with pipeline.Sink(slow_write, depth=8, name="draining-sink") as sink:
            for i in range(6):
                sink.put(i)
            raise ValueError("the model failed")
    assert written == list(range(6)) and not alive("draining-sink")
