from medssl.data.samplers import EpochShuffleSampler


def test_order_is_a_function_of_seed_and_epoch():
    a, b = EpochShuffleSampler(20, seed=1), EpochShuffleSampler(20, seed=1)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert sorted(list(a)) == list(range(20)) and list(a) != first
    assert list(EpochShuffleSampler(20, seed=2)) != first


def test_skip_resumes_mid_epoch_once():
    s = EpochShuffleSampler(10, seed=0)
    full = list(s)
    s.skip = 4
    assert list(s) == full[4:]
    assert list(s) == full  # the skip applies to one pass only


def test_ranks_partition_the_epoch():
    shards = [list(EpochShuffleSampler(11, seed=0, rank=r, num_replicas=3)) for r in range(3)]
    assert all(len(s) == 4 for s in shards)  # padded to 12
    assert set().union(*map(set, shards)) == set(range(11))
