"""A first check that the oracle helper and the core agree on the lecture's example."""

from tests.helpers import NonContig, check, rand


def test_lecture_example():
    check(lambda lib, a, b: lib.log(a) + a * b - lib.sin(b), rand(3, positive=True), rand(3))


def test_broadcast_noncontiguous_matmul():
    check(lambda lib, a, b: (a @ b).relu().sum(1), NonContig(rand(4, 3)), rand(3, 5))
