"""Incremental decoding: the Decoder's own layers over a preallocated key/value cache.

Graph mode compiles one graph per input shape, so everything here has a static shape:

* the cache is `[batch, kv_heads, cache_len, head_dim]` per layer and per K/V (together the
  `[layers, batch, kv_heads, cache_len, head_dim]` layout), held as Parameters and written in
  place with ScatterNdUpdate: the 8 cache writes of a 4-layer, batch-128 step took 2.4 ms
  this way and 4.6 ms as tensors passed in and returned (TensorScatterUpdate copies);
* a decode step may write into a small RecentWindow instead (the Generator's choice for large
  caches): the cache then takes one write per `window` tokens, since MindSpore's CPU
  ScatterNdUpdate costs time in proportion to the whole tensor it writes into;
* every token carries its own position, so each row writes its keys at its own columns
  (prompts of different lengths need no left padding and keep their true RoPE positions);
* a key column `j` is visible to a token at position `p` when `j <= p`: a mask, not a slice.
  Columns above a row's position may hold stale values; the mask gives them weight exactly 0.
  The prompt block of fresh caches (`prefill`) attends over its own keys, causally.

The same cell runs the prompt block (prefill, `[B, P]`) and one token per row (decode,
`[B, 1]`): two compiled graphs. The layers are the Decoder's own (`Decoder.forward_cached`
runs the same embedding, RoPE and Blocks as training, each Block writing into its
LayerCache), so the cell always sees the current weights and the architecture is written
once; this cell only holds the caches and builds the mask and the write index. It does not
rename the Decoder's parameters (`auto_prefix=False`).

For export (MindIR), `PrefillStep` and `DecodeStep` compute the same thing without state: the
caches are graph inputs and outputs (`[layers, B, KV, T, D]` for K and for V) and the batch
may be dynamic. Parameter caches cannot serve there: their shape fixes the batch, and a
loaded graph keeps its own copy of each Parameter (MindSpore 2.10 does persist in-place
writes across calls of one GraphCell, but the prefill and decode files would each hold a
separate cache, and other MindIR runtimes promise nothing about it). Writes there are
`one_hot @ new` (prefill, into empty caches: one term per sum, the rest exact zeros) and a
TensorScatterElements along the column axis (decode), indexed by the positions alone, so no
index depends on the batch size; both give exactly the values ScatterNdUpdate writes, and
the logits equal CachedDecoder's bit for bit at the same batch size. Measured on 2 CPU cores
(tiny model, batch 16, cache 256), decoding takes 1.3-2.3x CachedDecoder's time, most of it
MindSpore's dynamic-shape execution (a plain forward pass: 4.5 ms static, 20 ms dynamic).
"""
from __future__ import annotations

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore import dtype as mstype

from mindxh.models.llama.model import _MASKED, Decoder


def _additive(visible):
    """A boolean visibility tensor as an additive attention mask (0 where visible)."""
    return (1.0 - visible.astype(mstype.float32)) * _MASKED


class LayerCache(nn.Cell):
    """Keys and values of one layer, `[B, KV, T, D]` each, updated in place."""

    def __init__(self, index: int, batch: int, kv_heads: int, cache_len: int, head_dim: int):
        super().__init__()
        zeros = np.zeros((batch, kv_heads, cache_len, head_dim), np.float32)
        self.k = Parameter(Tensor(zeros), name=f"kv_cache.{index}.k", requires_grad=False)
        self.v = Parameter(Tensor(zeros.copy()), name=f"kv_cache.{index}.v", requires_grad=False)

    def construct(self, index, k, v):
        """Write k, v [B, KV, S, D] at `index` [B, KV, S, 3] = (row, head, column); return the
        whole updated cache (the returned values order the reads after the writes)."""
        return ops.scatter_nd_update(self.k, index, k), ops.scatter_nd_update(self.v, index, v)


class _WriteThrough(nn.Cell):
    """A LayerCache as the prompt block of fresh caches uses it: the block's keys/values are
    written at `index`, and attention reads the block itself, not the cache (whose columns
    beyond the block are stale, masked anyway)."""

    def __init__(self, cache: LayerCache):
        super().__init__()
        self.cache = cache

    def construct(self, index, k, v):
        written_k, written_v = self.cache(index, k, v)
        return ops.depend(k, written_k), ops.depend(v, written_v)  # the writes still happen


class RecentWindow(nn.Cell):
    """The last `window` decoded keys/values of one layer, `[B, KV, W, D]`, in front of its
    LayerCache (whose Parameters it shares).

    MindSpore's CPU ScatterNdUpdate takes time in proportion to the tensor it writes into, not
    to what it writes, so a one-column write into the whole cache cost as much as copying it
    (44% of the tiny model's batch-32 decode). Decoding writes into this small window instead,
    attends over (cache, window) as two key blocks under one softmax, and `flush` moves the
    window into the cache once every `window` steps: one cache-sized write per W tokens.
    """

    def __init__(self, cache: LayerCache, index: int, window: int):
        super().__init__()
        b, kv, _, d = cache.k.shape
        zeros = np.zeros((b, kv, window, d), np.float32)
        self.k, self.v = cache.k, cache.v
        self.window_k = Parameter(Tensor(zeros), name=f"kv_cache.{index}.window_k", requires_grad=False)
        self.window_v = Parameter(Tensor(zeros.copy()), name=f"kv_cache.{index}.window_v",
                                  requires_grad=False)

    def construct(self, index, k, v):
        """Write k, v [B, KV, 1, D] at `index` [B, KV, 1, 3] = (row, head, slot); return the key
        and value blocks (cache, updated window)."""
        window_k = ops.scatter_nd_update(self.window_k, index, k)
        window_v = ops.scatter_nd_update(self.window_v, index, v)
        return (self.k, window_k), (self.v, window_v)

    def flush(self, index):
        """The whole window into the cache at `index` [B, KV, W, 3] = (row, head, column)."""
        return (ops.scatter_nd_update(self.k, index, self.window_k),
                ops.scatter_nd_update(self.v, index, self.window_v))


# Below this size of one layer's key (or value) cache a window costs more than it saves: its
# extra kernels (a second pair of attention matmuls, the joined softmax) outweigh the smaller
# write. Measured on 2 CPU cores (docs/performance.md): batch 1 (0.15-0.6 MB) is 6-11% slower
# with a window, 1.2-1.6 MB breaks even (within 4%), batch 32 (4.7-19 MB) is 1.1-1.4x faster.
WINDOW_MIN_BYTES = 2 << 20
DECODE_WINDOW = 16  # tokens: one cache write per 16 decoded tokens


def decode_window(batch_size: int, kv_heads: int, cache_len: int, head_dim: int) -> int:
    """The RecentWindow size worth using for a cache of this shape (0: write the cache itself)."""
    if 4 * batch_size * kv_heads * cache_len * head_dim < WINDOW_MIN_BYTES:
        return 0
    return min(DECODE_WINDOW, cache_len)


class _Flush(nn.Cell):
    """`(positions [B, 1], slot [1])`, after decoding the window's last slot: every layer's
    window into its cache, slot j of row b at column positions[b] - slot + j."""

    def __init__(self, windows: nn.CellList, row_ids: Tensor, head_ids: Tensor, slots: Tensor):
        super().__init__(auto_prefix=False)
        self.windows, self.row_ids, self.head_ids, self.slots = windows, row_ids, head_ids, slots

    def construct(self, positions, slot):
        columns = positions - slot + self.slots.reshape(1, -1)  # [B, W]
        index = _scatter_index(self.row_ids, self.head_ids, columns)
        written = ()
        for window in self.windows:
            written = written + window.flush(index)
        return written[-1][0, 0, 0, 0]  # one number: the call waits for the writes


def _scatter_index(row_ids, head_ids, columns):
    """[B, KV, S, 3] scatter indices (row, kv head, column) for columns [B, S]."""
    b, s = columns.shape
    shape = (b, head_ids.shape[0], s)
    rows = ops.broadcast_to(row_ids.reshape(b, 1, 1), shape)
    heads = ops.broadcast_to(head_ids.reshape(1, -1, 1), shape)
    cols = ops.broadcast_to(columns.reshape(b, 1, s), shape)
    return ops.stack((rows, heads, cols), -1)


class CachedDecoder(nn.Cell):
    """`(tokens [B, S], positions [B, S], out_index [B]) -> logits [B, V]` of the token at
    `out_index` in each row, after writing every token's keys/values at its position.

    With `window` > 0, decode through `decode` (one token per row): its keys/values go to a
    RecentWindow slot, and every `window` steps the window is flushed into the cache. `prefill`
    and `decode` are the whole protocol; calling the cell itself always writes the cache.
    """

    def __init__(self, model: Decoder, batch_size: int, cache_len: int, window: int = 0):
        super().__init__(auto_prefix=False)
        cfg = model.cfg
        if cache_len > cfg.max_seq_len:
            raise ValueError(f"cache_len={cache_len} exceeds the model's max_seq_len={cfg.max_seq_len} "
                             "(its RoPE table)")
        if not 0 <= window <= cache_len:
            raise ValueError(f"window={window} must be in [0, cache_len={cache_len}]")
        self.model = model
        self.batch_size, self.cache_len, self.window = batch_size, cache_len, window
        self.num_kv_heads = cfg.num_kv_heads
        self.caches = nn.CellList([LayerCache(i, batch_size, cfg.num_kv_heads, cache_len, cfg.head_dim)
                                   for i in range(cfg.num_layers)])
        self.write_through = nn.CellList([_WriteThrough(c) for c in self.caches])
        self.columns = Tensor(np.arange(cache_len, dtype=np.int32))
        self.row_ids = Tensor(np.arange(batch_size, dtype=np.int32))
        self.head_ids = Tensor(np.arange(cfg.num_kv_heads, dtype=np.int32))
        self._zeros = Tensor(np.zeros(batch_size, np.int32))
        self._slot = 0
        if window:
            self.windows = nn.CellList([RecentWindow(c, i, window) for i, c in enumerate(self.caches)])
            self.window_slots = Tensor(np.arange(window, dtype=np.int32))
            self._slot_ids = [Tensor(np.array([j], np.int32)) for j in range(window)]
            self._flush = _Flush(self.windows, self.row_ids, self.head_ids, self.window_slots)

    def prefill(self, tokens, positions, out_index):
        """The prompt block at positions 0..S-1 of every row, into fresh caches (Tensors, as
        the cell's own call); decoding restarts at slot 0. The block attends over its own
        keys only: at 128 rows x 64 tokens over a 112-column cache that was ~12% of the
        prefill's time (paired runs), with the same logits bit for bit."""
        self._slot = 0
        return self(tokens, positions, out_index, None, True)

    def decode(self, tokens, positions):
        """One token per row: tokens/positions [B, 1] Tensors -> logits [B, V]."""
        if not self.window:
            return self(tokens, positions, self._zeros)
        slot = self._slot_ids[self._slot]
        logits = self(tokens, positions, self._zeros, slot)
        self._slot += 1
        if self._slot == self.window:
            self._flush(positions, slot)
            self._slot = 0
        return logits

    def construct(self, tokens, positions, out_index, slot=None, fresh=False):
        b, s = tokens.shape
        if fresh:  # a prompt block at positions 0..S-1: causal over its own keys
            mask = self.model.causal_mask[:s, :s]
            caches, index = self.write_through, _scatter_index(self.row_ids, self.head_ids, positions)
        elif slot is None:  # every token into the cache at its position
            visible = self.columns.reshape(1, 1, -1) <= positions.expand_dims(2)  # [B, S, T]
            mask = _additive(visible).reshape(b, 1, 1, s, self.cache_len)
            caches, index = self.caches, _scatter_index(self.row_ids, self.head_ids, positions)
        else:  # one token per row into window slot `slot`; the cache holds columns < position - slot
            flushed = self.columns.reshape(1, -1) < positions - slot  # [B, T]
            in_window = self.window_slots <= slot  # [W]
            mask = (_additive(flushed).reshape(b, 1, 1, 1, self.cache_len),
                    _additive(in_window).reshape(1, 1, 1, 1, self.window))
            caches = self.windows
            index = _scatter_index(self.row_ids, self.head_ids, ops.broadcast_to(slot.reshape(1, 1), (b, 1)))
        x = self.model.forward_cached(tokens, positions, mask, caches, index)
        h = x.shape[-1]
        picked = ops.gather(x.reshape(b * s, h), self.row_ids * s + out_index, 0)  # [B, H]
        return self.model.logits(picked)


class _Given(nn.Cell):
    """The cache a Block sees in an export step: the already-updated (k, v), passed as `index`."""

    def construct(self, index, k, v):
        return index


class _StatelessStep(nn.Cell):
    """Shared by PrefillStep and DecodeStep: mask, cache writes and the layer loop.

    Each layer's new keys/values are projected here (`attn.project`, as the Block does) and
    written into that layer's cache; the Block then runs as in training and generation, its
    attention reading the updated cache through `_Given`. The graph compiler merges the
    repeated projection (common subexpressions), so the Block's code is reused, not copied.
    """

    def __init__(self, model: Decoder, cache_len: int):
        super().__init__(auto_prefix=False)
        if cache_len > model.cfg.max_seq_len:
            raise ValueError(f"cache_len={cache_len} exceeds the model's max_seq_len="
                             f"{model.cfg.max_seq_len} (its RoPE table)")
        self.model, self.cache_len = model, cache_len
        self.given = _Given()
        self.columns = Tensor(np.arange(cache_len, dtype=np.int32)).reshape(1, 1, cache_len)

    def _run(self, tokens, positions, k_in, v_in):
        """-> hidden states [B, S, H], updated caches [L, B, KV, T, D]. Prefill (`k_in` None)
        writes S tokens into empty caches; decode (S = 1) writes one column per row."""
        model = self.model
        pos = positions.expand_dims(2)  # [B, S, 1]
        mask = _additive(self.columns <= pos).expand_dims(1).expand_dims(1)  # [B, 1, 1, S, T]
        cos, sin = model._rope(positions, tokens.shape[1])
        x = model._embed(tokens)
        # where the new keys go (graph mode wants the name bound on both branches)
        if k_in is None:  # one-hot [B, 1, T, S]: 1 where column t receives token s
            target = (self.columns == pos).astype(mstype.float32).transpose(0, 2, 1).expand_dims(1)
        else:  # the column [B, 1, 1, 1]; caches per layer by unstack, not k_in[i] (a slow gather)
            target = positions.reshape(-1, 1, 1, 1)
            k_in, v_in = ops.unstack(k_in, 0), ops.unstack(v_in, 0)
        ks, vs = [], []
        for i, layer in enumerate(model.layers):
            _, k, v = layer.attn.project(layer.attn_norm(x), cos, sin)  # k, v [B, KV, S, D]
            if k_in is None:
                k_new, v_new = ops.matmul(target, k), ops.matmul(target, v)  # [B, KV, T, D]
            else:  # 3-5x cheaper than a broadcast select or a one-hot matmul on CPU
                index = ops.zeros_like(k).astype(mstype.int32) + target
                k_new = ops.tensor_scatter_elements(k_in[i], index, k, axis=2)
                v_new = ops.tensor_scatter_elements(v_in[i], index, v, axis=2)
            x = layer(x, cos, sin, mask, self.given, (k_new, v_new))
            ks.append(k_new)
            vs.append(v_new)
        # concat, not ops.stack: a loaded MindIR's Stack keeps the batch of its first call
        # (MindSpore 2.10), so later calls with another batch size would get stale shapes
        return x, ops.concat([t.expand_dims(0) for t in ks]), ops.concat([t.expand_dims(0) for t in vs])


class PrefillStep(_StatelessStep):
    """`(tokens [B, S], positions [B, S], out_index [B]) -> (logits [B, V], k, v)`: the prompt
    block into empty caches `[L, B, KV, T, D]`; logits of the token at `out_index` per row."""

    def construct(self, tokens, positions, out_index):
        x, k, v = self._run(tokens, positions, None, None)
        picked = ops.gather(x, out_index, 1, 1)  # [B, H]: row b's token out_index[b]
        return self.model.logits(picked), k, v


class DecodeStep(_StatelessStep):
    """`(tokens [B, 1], positions [B, 1], k, v) -> (logits [B, V], k, v)`: one token per row."""

    def construct(self, tokens, positions, k_cache, v_cache):
        x, k, v = self._run(tokens, positions, k_cache, v_cache)
        return self.model.logits(x[:, 0]), k, v
