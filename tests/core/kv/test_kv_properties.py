"""Property tests: random admissions, growth and frees never break the block pool's invariants."""

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tokenmill.kv import KVCacheManager
from tokenmill.sched import Request

# A few shared stems make prefix hits (and shared blocks) common.
STEMS = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 9, 9, 9, 9], [7] * 12, []]


class KVMachine(RuleBasedStateMachine):
    """Plays the scheduler's side of the protocol against the real manager and checks it each step."""

    @initialize(num_blocks=st.integers(1, 12), block_size=st.sampled_from([1, 2, 4]), caching=st.booleans())
    def setup(self, num_blocks, block_size, caching):
        self.kv = KVCacheManager(num_blocks, block_size, enable_prefix_caching=caching)
        self.live: dict[str, Request] = {}
        self.count = 0

    @rule(stem=st.sampled_from(STEMS), tail=st.lists(st.integers(0, 9), max_size=6), chunk=st.integers(1, 16))
    def admit(self, stem, tail, chunk):
        prompt = (stem + tail) or [3]
        self.count += 1
        request = Request(f"r{self.count}", prompt, 8)
        prefix = self.kv.find_prefix(request)
        assert prefix.num_tokens < request.num_tokens
        num_new = min(chunk, request.num_tokens - prefix.num_tokens)
        before = self.snapshot()
        if self.kv.allocate_slots(request, num_new, prefix) is None:
            assert self.snapshot() == before, "a failed allocation changed the pool"
            return
        request.num_computed_tokens = prefix.num_tokens + num_new
        self.live[request.request_id] = request

    @precondition(lambda self: self.live)
    @rule(data=st.data(), token=st.integers(0, 9), chunk=st.integers(1, 8))
    def grow(self, data, token, chunk):
        request = self.live[data.draw(st.sampled_from(sorted(self.live)))]
        if request.num_computed_tokens == request.num_tokens:
            request.append_output_token(token)  # a sampled token, computed by the next step
        num_new = min(chunk, request.num_tokens - request.num_computed_tokens)
        if self.kv.allocate_slots(request, num_new) is not None:
            request.num_computed_tokens += num_new

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def free(self, data):
        request = self.live.pop(data.draw(st.sampled_from(sorted(self.live))))
        self.kv.free(request)

    @precondition(lambda self: self.live)
    @rule()
    def free_all(self):
        for request in self.live.values():
            self.kv.free(request)
        self.live.clear()
        self.check_all_free()

    def snapshot(self):
        pool = self.kv.pool
        return [(b.ref_cnt, b.block_hash) for b in pool.blocks], [b.block_id for b in pool.free_blocks()]

    @invariant()
    def reference_counts_match_owners(self):
        if not hasattr(self, "kv"):
            return
        owners = [0] * self.kv.num_blocks
        for request in self.live.values():
            table = self.kv.block_table(request.request_id)
            assert len(table) == len(set(table)), "a block owned twice by one request"
            assert len(table) * self.kv.block_size >= request.num_computed_tokens
            for block_id in table:
                owners[block_id] += 1
        for block, count in zip(self.kv.pool.blocks, owners):
            assert block.ref_cnt >= 0 and block.ref_cnt == count
            if count > 1:
                assert block.block_hash is not None, "only cached full blocks may be shared"
        free = self.kv.pool.free_blocks()
        assert {b.block_id for b in free} == {b.block_id for b in self.kv.pool.blocks if b.ref_cnt == 0}
        assert len(free) == self.kv.num_free_blocks == self.kv.num_blocks - self.kv.num_used_blocks

    @invariant()
    def hash_map_is_consistent(self):
        if not hasattr(self, "kv"):
            return
        hashed = [b for b in self.kv.pool.blocks if b.block_hash is not None]
        assert len(hashed) == self.kv.num_cached_blocks
        assert all(self.kv.pool.lookup(b.block_hash) is b for b in hashed)
        assert self.kv.prefix_hits <= self.kv.prefix_queries

    def check_all_free(self):
        assert self.kv.num_free_blocks == self.kv.num_blocks and self.kv.num_used_blocks == 0
        assert all(b.ref_cnt == 0 for b in self.kv.pool.blocks)

    def teardown(self):
        if hasattr(self, "kv"):
            for request in self.live.values():
                self.kv.free(request)
            self.check_all_free()


KVMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestKVMachine = KVMachine.TestCase
