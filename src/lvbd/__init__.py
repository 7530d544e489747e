"""lvbd: single-channel sound source separation by latent variational block-wise disentanglement.

Shape legend used in every module and comment:
    B batch, K sources, C audio channels, L samples, N encoder filters,
    M latent channels, D block (latent) size, T frames, F STFT bins.
Axis order: batch, sources, channels, time last — waveforms (B, K, L), latents (B, M, D, T),
posteriors (B, K, D, T), demixers (B, D, K, M).
"""
__version__ = "0.1.0"

__all__ = ["Separator", "__version__"]


def __getattr__(name):  # lazy: `import lvbd` stays light, `from lvbd import Separator` works
    if name == "Separator":
        from .separate import Separator
        return Separator
    raise AttributeError(f"module 'lvbd' has no attribute {name!r}")
