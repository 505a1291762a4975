"""IdMap: one id kind, tombstones, the allowed-rows bitmap from filters, save/load."""

from __future__ import annotations

import numpy as np
import pytest

from muvera.idmap import IdMap


@pytest.mark.parametrize("ids", [list(range(100)), [i * 10**12 for i in range(100)]])  # dense and sparse
def test_allowed_bitmap_from_every_filter_form(ids):
    m = IdMap()
    m.append(m.check_new(ids, len(ids)))
    m.remove([ids[3], ids[50]])
    want = np.zeros(100, bool)
    want[[1, 2, 99]] = True
    for filt in ([ids[1], ids[2], ids[3], ids[99], 10**15 + 7, -5, "x", 2.0, None, True],
                 np.array([ids[1], ids[2], ids[3], ids[99]], dtype=np.int64),
                 np.array([ids[1], ids[2], ids[99]], dtype=np.uint64),
                 (np.int32(ids[1]) if ids[1] < 2**31 else ids[1], ids[2], ids[99]),
                 {ids[1], ids[2], ids[99], ids[50]}):
        np.testing.assert_array_equal(m.allowed(filt), want)
    assert not m.allowed([]).any() and not m.allowed(np.array([], np.int64)).any()
    np.testing.assert_array_equal(m.allowed(None), m.alive.astype(bool))
    m.append(m.check_new([ids[3]], 1))  # re-added: a new row, the table follows
    assert m.allowed([ids[3]]).nonzero()[0].tolist() == [100]


def test_string_ids_and_kinds():
    m = IdMap()
    m.append(m.check_new(["a", "b", "c"], 3))
    assert m.kind == "str" and m.allowed(["b", np.str_("c"), 1, None]).nonzero()[0].tolist() == [1, 2]
    with pytest.raises(TypeError, match="holds str ids"):
        m.check_new([4], 1)
    with pytest.raises(TypeError, match="str ids"):
        m.check_new(None, 1)
    out = m.ids_of(np.array([[2, -1]]))
    assert out.dtype == object and out.tolist() == [["c", None]]
    assert IdMap().ids_of(np.array([[-1]])).dtype == np.int64


def test_save_load_round_trip(tmp_path):
    for ids in (["é", "b", ""], [5, 1, 9]):
        m = IdMap()
        m.append(m.check_new(ids, 3))
        m.remove([ids[1]])
        fields, files = m.save(tmp_path)
        back = IdMap.load(tmp_path, fields, 3)
        assert back.kind == m.kind and back.live_ids() == m.live_ids() and back.next_id == m.next_id
        np.testing.assert_array_equal(back.alive, m.alive)
