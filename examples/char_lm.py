"""A small character-level language model: Embedding -> LSTM -> Dense, trained by BPTT in NumPy.

    python examples/char_lm.py                  # about a minute on a laptop CPU

It learns to predict the next character of a short text, prints the loss in bits per
character (against log2(vocabulary) for a uniform guess), and samples some text from a prompt.
"""

from __future__ import annotations

import numpy as np

import unrolled
from unrolled import layers, losses, optimizers

TEXT = (
    "a recurrent network reads a sequence one step at a time. at every step it combines the "
    "new input with the state it carried from the step before, and the new state is what it "
    "remembers. the same weights are used at every step, so the network can read a sequence "
    "of any length. to train it we unroll the loop: the network becomes a deep stack of "
    "identical layers, one per step, and the gradient flows back through time from the last "
    "step to the first. when the gradient shrinks at every step it vanishes, and the network "
    "forgets what it read long ago; when it grows it explodes. the long short term memory cell "
    "adds a carry with gates that decide what to keep, what to forget and what to show, and so "
    "the gradient can travel far back in time. "
)


def make_data(text: str, window: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    vocab = sorted(set(text))
    ids = np.array([vocab.index(c) for c in text])
    starts = np.arange(0, len(ids) - window - 1, 3)
    x = np.stack([ids[s:s + window] for s in starts])          # (batch, timesteps)
    y = np.stack([ids[s + 1:s + window + 1] for s in starts])  # (batch, timesteps)
    return x, y, vocab


def sample(model, vocab: list[str], prompt: str, length: int, window: int) -> str:
    """Greedy continuation of `prompt` (at least `window` characters), one character at a time."""
    ids = [vocab.index(c) for c in prompt]
    for _ in range(length):
        logits = model.predict(np.array([ids[-window:]]), verbose=0)[0, -1]   # (vocab,)
        ids.append(int(np.argmax(logits)))
    return "".join(vocab[i] for i in ids[len(prompt):])


def main(epochs: int = 12, window: int = 32, units: int = 48, repeat: int = 3, verbose: int = 2,
         seed: int = 0) -> dict:
    unrolled.utils.set_random_seed(seed)
    text = TEXT * repeat
    x, y, vocab = make_data(text, window)
    model = unrolled.Sequential([
        layers.Embedding(len(vocab), 16),
        layers.LSTM(units, return_sequences=True),
        layers.Dense(len(vocab)),                             # logits, (batch, timesteps, vocab)
    ])
    model.compile(optimizers.Adam(0.01), losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(x, y, epochs=epochs, batch_size=32, verbose=verbose)
    loss, accuracy = model.evaluate(x, y, verbose=0)
    bits = loss / np.log(2)
    print(f"{bits:.2f} bits per character (uniform guess: {np.log2(len(vocab)):.2f}); "
          f"next-character accuracy {accuracy:.1%}")
    prompt = text[-window:]
    continuation = sample(model, vocab, prompt, 60, window)
    print(f"prompt: {prompt!r}\ncontinued: {continuation!r}")
    return {"bits_per_char": float(bits), "accuracy": float(accuracy), "sample": continuation,
            "history": history.history}


if __name__ == "__main__":
    main()
