"""Reading and writing Keras model files without TensorFlow, and without running their code.

`load_model(path)` reads `.keras` archives (Keras 3, tf.keras 2.13+) and legacy `.h5` files
(tf.keras 2.x, Keras 3); `save_model(model, "m.keras")` and `save_weights(model, "w.weights.h5")`
write Keras 3's formats, which Keras 3 loads; `load_weights(model, path)` reads all of them.
Models get these as methods through `SavingMixin`: `model.save`, `model.save_weights`,
`model.load_weights`.

Nothing a file contains is executed or imported: classes come from unrolled's own registry,
Lambda layers are refused, and every array is checked against the layer before it is read.
"""

from unrolled.saving._api import SavingMixin, load_model, load_weights, save_model, save_weights
from unrolled.saving._errors import ModelFileError

__all__ = ["load_model", "save_model", "save_weights", "load_weights", "SavingMixin",
           "ModelFileError"]
