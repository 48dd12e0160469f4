"""A real progressive codec for the trained chains: `coder.py` turns images into one chunk of
bits per stage (range coding with the model's own probabilities), `container.py` frames those
chunks into one file, `__main__.py` is the command line (`python -m progcode_ext.codec compress |
decompress`). docs/codec.md describes the file and what its determinism rests on."""
