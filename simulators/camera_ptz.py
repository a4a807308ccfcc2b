"""A simulated PTZ head and its camera, for patrol scenarios.

``goto(preset)`` aims the head (the call the worker's PTZ client makes); ``capture()`` returns
what the camera sees there, with fresh sensor noise. A stuck head ignores moves and keeps
showing the view it was left on, which is what the worker's stuck-PTZ gate must catch.
"""

from __future__ import annotations

import numpy as np

from simulators.camera_scenes import Image


class SimulatedPtz:
    def __init__(
        self, views: dict[int, Image], *, stuck: bool = False, noise: float = 2.0, seed: int = 0
    ) -> None:
        if not views:
            raise ValueError("a PTZ needs at least one preset view")
        self.views = dict(views)
        self.stuck = stuck
        self.noise = noise
        self.moves: list[int] = []
        self.preset = next(iter(self.views))
        self._rng = np.random.default_rng(seed)

    def goto(self, preset: int) -> None:
        self.moves.append(preset)
        if not self.stuck and preset in self.views:
            self.preset = preset

    def show(self, preset: int, image: Image) -> None:
        """What the camera sees at ``preset`` from now on (a new day, a new scene)."""
        self.views[preset] = image

    def capture(self) -> Image:
        image = self.views[self.preset].astype(np.float32)
        image += self._rng.normal(0, self.noise, image.shape).astype(np.float32)
        return np.clip(image, 0, 255).astype(np.uint8)
