import pytest

from streams.batching import BatchPolicy, fair_order


def test_batches_never_exceed_the_maximum_and_cover_every_frame():
    policy = BatchPolicy(8, preferred_sizes=(2, 4))
    for n in range(0, 40):
        sizes = policy.sizes(n)
        assert sum(sizes) == n
        assert all(1 <= s <= 8 for s in sizes)


def test_preferred_sizes_are_cut_first_largest_first():
    assert BatchPolicy(16, preferred_sizes=(4, 8)).sizes(30) == [16, 8, 4, 2]
    assert BatchPolicy(8, preferred_sizes=(4,)).sizes(7) == [4, 3]
    assert BatchPolicy(8).sizes(16) == [8, 8]


def test_invalid_preferred_sizes_are_refused():
    with pytest.raises(ValueError, match="outside"):
        BatchPolicy(8, preferred_sizes=(16,))
    with pytest.raises(ValueError):
        BatchPolicy(0)


def test_a_flooding_camera_cannot_push_others_out_of_the_first_batch():
    queued = [("flood", i) for i in range(12)] + [("quiet-1", 0), ("quiet-2", 0)]
    first = BatchPolicy(4).batches(queued, camera=lambda f: f[0])[0]
    assert {c for c, _ in first} == {"flood", "quiet-1", "quiet-2"}


def test_each_cameras_frames_keep_their_order():
    queued = [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2), ("c", 1)]
    out = fair_order(queued, camera=lambda f: f[0])
    for cam in "abc":
        seqs = [s for c, s in out if c == cam]
        assert seqs == sorted(seqs)
    assert sorted(out) == sorted(queued)


def test_queue_holds_two_batches_so_decoding_overlaps_inference():
    assert BatchPolicy(8).queue_limit == 16
