"""A synthetic full-body person cut-out for smoke runs, tests and the example workflows.

No clearly licensed full-body photo ships with any package we depend on, so the example "photo" is
drawn: an upright figure (head in the top-centre third, as SyncHuman's face crop assumes) with
coloured clothing and skin tones, on a transparent background.
"""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFilter

__all__ = ["example_person"]


def example_person(height: int = 768) -> Image.Image:
    """An RGBA image ``(height*2//3) x height`` of a standing figure; alpha 0 outside the figure."""
    h = int(height)
    w = h * 2 // 3
    s = h / 768.0
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    cx = w / 2

    def box(x0, y0, x1, y1):
        return [cx + x0 * s, y0 * s, cx + x1 * s, y1 * s]

    skin, hair, shirt, trousers, shoes = (224, 172, 140, 255), (60, 40, 30, 255), (40, 110, 190, 255), (50, 50, 70, 255), (30, 30, 30, 255)
    d.rounded_rectangle(box(-70, 430, -8, 730), radius=int(20 * s), fill=trousers)  # legs
    d.rounded_rectangle(box(8, 430, 70, 730), radius=int(20 * s), fill=trousers)
    d.ellipse(box(-85, 705, -5, 750), fill=shoes)
    d.ellipse(box(5, 705, 85, 750), fill=shoes)
    d.rounded_rectangle(box(-90, 165, 90, 460), radius=int(35 * s), fill=shirt)  # torso
    d.rounded_rectangle(box(-140, 175, -88, 430), radius=int(24 * s), fill=shirt)  # arms
    d.rounded_rectangle(box(88, 175, 140, 430), radius=int(24 * s), fill=shirt)
    d.ellipse(box(-140, 410, -92, 470), fill=skin)  # hands
    d.ellipse(box(92, 410, 140, 470), fill=skin)
    d.rectangle(box(-22, 130, 22, 175), fill=skin)  # neck
    d.ellipse(box(-62, 18, 62, 150), fill=skin)  # head
    d.chord(box(-64, 12, 64, 110), 180, 360, fill=hair)
    for ex in (-24, 24):  # eyes and mouth: a face for the close-up view
        d.ellipse(box(ex - 7, 75, ex + 7, 87), fill=(40, 30, 30, 255))
    d.arc(box(-20, 95, 20, 125), 20, 160, fill=(150, 60, 60, 255), width=max(1, int(4 * s)))
    alpha = img.getchannel("A").filter(ImageFilter.GaussianBlur(radius=0.8 * s))
    img.putalpha(alpha)
    return img
