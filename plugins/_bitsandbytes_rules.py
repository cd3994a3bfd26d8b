"""bitsandbytes' state-size rules, shared by the bitsandbytes plugin and GaLore's 8-bit AdamW
(which keeps its state with bitsandbytes' ``Optimizer2State``).

A helper module of the built-in plugins, not a plugin: it registers nothing, and it lets two
plugins share one backend's facts without one plugin importing another.
"""

from __future__ import annotations

from optimhub.plugin import blockwise_bytes

__all__ = ["BLOCK_SIZE", "MIN_8BIT_SIZE", "QMAP_BYTES", "bnb_quantized", "bnb_state_bytes"]

#: bnb's quantization block and its smallest quantized tensor (``min_8bit_size``).
BLOCK_SIZE = 256
MIN_8BIT_SIZE = 4096
#: The signed and unsigned 256-entry float32 code tables an optimizer makes once, at its
#: first 8-bit state (``fill_qmap``), shared by all its parameters.
QMAP_BYTES = 2 * 256 * 4


def bnb_quantized(numel: int, *, bits: int) -> bool:
    """Whether bnb keeps a tensor's state in 8 bits: 8-bit names, tensors >= 4096 elements."""
    return bits == 8 and numel >= MIN_8BIT_SIZE


def bnb_state_bytes(numel: int, *, states: int, bits: int) -> int:
    """One tensor's state: ``states`` float32 buffers (bnb's 32-bit state is float32
    whatever the parameter's dtype), or uint8 ones with a float32 absmax per 256-element
    block (the last block partial)."""
    if bnb_quantized(numel, bits=bits):
        return states * blockwise_bytes(numel, bits=8, block_size=BLOCK_SIZE)
    return states * 4 * numel
