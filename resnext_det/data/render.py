"""Drawing: 8x8 glyphs upscaled to ink masks, backgrounds, and painting ink onto them.

Images are float32 RGB in [0, 1] of shape (H, W, 3) while drawn; `to_uint8` ends them.
Everything random takes a numpy Generator, so one seed fixes every pixel.
"""
import cv2
import numpy as np

from .source import GLYPH_MAX

# Ink below this fraction of a glyph's peak is dropped after upscaling, so that a digit's
# box is tight around all that is painted (bicubic leaves faint halos and ringing).
INK_THRESHOLD = 0.2
MIN_CONTRAST = 0.45  # |digit - background| mean intensity before opacity (0.8..1.0)


def upscale_glyph(glyph, height, width):
    """An 8x8 glyph (0..16) -> ink (height, width) float32 in [0, 1], peak 1, bicubic."""
    ink = cv2.resize(glyph / GLYPH_MAX, (width, height), interpolation=cv2.INTER_CUBIC)
    ink = np.clip(ink, 0.0, None)
    ink /= max(float(ink.max()), 1e-6)
    ink[ink < INK_THRESHOLD] = 0.0
    return ink.astype(np.float32)


def ink_box(ink):
    """Tight [x, y, w, h] (ints, pixels) around the nonzero pixels of ink; None if none."""
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if len(rows) == 0:
        return None
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def ink_mask(ink, x, y, image_shape):
    """Boolean (H, W) mask of the pixels that ink placed at (x, y) paints: ink > 0 there.

    `paint` blends with alpha = ink * opacity, so these are exactly the pixels the digit
    changes, and their tight box is ink_box(ink) moved to (x, y).
    """
    mask = np.zeros(image_shape[:2], dtype=bool)
    height, width = ink.shape
    mask[y:y + height, x:x + width] = ink > 0
    return mask


def smooth_noise(height, width, rng, cells, amplitude):
    """Gaussian noise on a cells x cells grid, bicubically upscaled: soft blotches."""
    grid = rng.normal(0.0, amplitude, (cells, cells, 3)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def gradient_background(height, width, rng, strength):
    """A random base color plus a linear ramp of random direction and per-channel slope."""
    angle = rng.uniform(0.0, 2.0 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = np.cos(angle) * (xx / width - 0.5) + np.sin(angle) * (yy / height - 0.5)
    slope = rng.uniform(-strength, strength, 3).astype(np.float32)
    base = rng.uniform(0.0, 1.0, 3).astype(np.float32)
    return base + ramp[..., None] * slope


def draw_clutter(image, rng, count):
    """Draw `count` random lines and rectangles (outlined or half-transparent), in place."""
    height, width = image.shape[:2]
    for _ in range(count):
        color = tuple(float(c) for c in rng.uniform(0.0, 1.0, 3))
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        kind = rng.integers(3)
        if kind == 0:
            cv2.line(image, p1, p2, color, int(rng.integers(1, 4)), cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(image, p1, p2, color, int(rng.integers(1, 3)))
        else:
            layer = image.copy()
            cv2.rectangle(layer, p1, p2, color, -1)
            alpha = rng.uniform(0.15, 0.5)
            image[:] = (1.0 - alpha) * image + alpha * layer


def cluttered_background(height, width, rng, max_clutter=6):
    """Gradient + smooth noise + 0..max_clutter lines/rectangles, clipped to [0, 1]."""
    image = gradient_background(height, width, rng, strength=0.6)
    cells = int(rng.integers(3, 13))
    image += smooth_noise(height, width, rng, cells, rng.uniform(0.02, 0.15))
    image = np.clip(image, 0.0, 1.0)
    draw_clutter(image, rng, int(rng.integers(0, max_clutter + 1)))
    return image


def mild_background(height, width, rng):
    """A gentle gradient with faint blotches: the classification set's backgrounds."""
    image = gradient_background(height, width, rng, strength=0.3)
    image += smooth_noise(height, width, rng, int(rng.integers(2, 6)), rng.uniform(0.0, 0.06))
    return np.clip(image, 0.0, 1.0)


def contrasting_color(background_patch, rng, min_contrast=MIN_CONTRAST):
    """An RGB color whose mean intensity is >= min_contrast away from the patch's mean."""
    level = float(background_patch.mean())
    if level >= 0.5:
        target = rng.uniform(0.0, level - min_contrast)
    else:
        target = rng.uniform(level + min_contrast, 1.0)
    tint = rng.uniform(-0.15, 0.15, 3)
    color = np.clip(target + tint - tint.mean(), 0.0, 1.0)
    return color.astype(np.float32)


def paint(image, ink, x, y, color, opacity):
    """Alpha-blend `color` into image[y:y+h, x:x+w] with alpha = ink * opacity, in place."""
    height, width = ink.shape
    alpha = (ink * opacity)[..., None]
    region = image[y:y + height, x:x + width]
    region[:] = (1.0 - alpha) * region + alpha * color


def paint_digit(image, ink, x, y, rng):
    """Paint ink at (x, y) in a color that stands out from what lies beneath it."""
    height, width = ink.shape
    color = contrasting_color(image[y:y + height, x:x + width], rng)
    paint(image, ink, x, y, color, rng.uniform(0.8, 1.0))


def paint_fragment(image, ink, rng):
    """Paint a faint piece (a random 35-65% window) of ink somewhere: a distractor."""
    height, width = ink.shape
    fh, fw = (max(1, int(round(s * rng.uniform(0.35, 0.65)))) for s in (height, width))
    top, left = int(rng.integers(0, height - fh + 1)), int(rng.integers(0, width - fw + 1))
    piece = ink[top:top + fh, left:left + fw]
    x = int(rng.integers(0, image.shape[1] - fw + 1))
    y = int(rng.integers(0, image.shape[0] - fh + 1))
    paint(image, piece, x, y, rng.uniform(0.0, 1.0, 3).astype(np.float32), rng.uniform(0.08, 0.25))


def to_uint8(image, rng, noise):
    """Add Gaussian pixel noise of std `noise`, clip, and quantize to uint8 RGB."""
    if noise > 0:
        image = image + rng.normal(0.0, noise, image.shape).astype(np.float32)
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
