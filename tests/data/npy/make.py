#!/usr/bin/env python3
"""make.py: writes the golden .npy files that tests/c/test_npy.c reads, with NumPy.
Run it from anywhere (python3 tests/data/npy/make.py); the files land beside it. The tests only
read the committed files, so NumPy is needed only to regenerate them (made with NumPy 1.24)."""
import os
import numpy as np
from numpy.lib import format as npf

here = os.path.dirname(os.path.abspath(__file__))


def save(name, a, version=None):
    with open(os.path.join(here, name), "wb") as f:
        npf.write_array(f, a, version=version)


# Values are simple formulas so the C test can recompute them.
save("f8_2x3.npy", np.arange(6, dtype="<f8").reshape(2, 3) * 0.5 - 1.0)      # -1, -0.5, ... 1.5
save("i8_5.npy", np.array([-3, 0, 7, 2**31 - 1, -2**31], dtype="<i8"))      # int64 within i32
save("i8_big.npy", np.array([1, 2**31], dtype="<i8"))                       # out of i32 range
save("b1_4.npy", np.array([True, False, False, True]))
save("i1_3.npy", np.array([-128, 0, 127], dtype="i1"))
save("u1_2x2.npy", np.array([[0, 1], [254, 255]], dtype="u1"))
save("i4_be_3.npy", np.array([-2, 1, 65536], dtype=">i4"))                   # big-endian
save("f4_be_3x2.npy", np.arange(6, dtype=">f4").reshape(3, 2) / 4)           # big-endian
# Fortran order: element [i,j,k] = 100i + 10j + k whatever the layout on disk.
idx = np.indices((2, 3, 4))
save("f4_fortran_2x3x4.npy", np.asfortranarray((100 * idx[0] + 10 * idx[1] + idx[2]).astype("<f4")))
save("f8_be_fortran_3x4.npy", np.asfortranarray(np.arange(12, dtype=">f8").reshape(3, 4)))
save("f4_v2_2x2.npy", np.array([[1.5, -2.5], [3.25, 0]], dtype="<f4"), version=(2, 0))
save("i4_v3_3.npy", np.array([5, -6, 7], dtype="<i4"), version=(3, 0))
save("f4_0d.npy", np.array(3.5, dtype="<f4"))
save("f4_0x3.npy", np.zeros((0, 3), dtype="<f4"))
save("c8_2.npy", np.array([1 + 2j, 3 - 4j], dtype="<c8"))                   # unsupported dtype
