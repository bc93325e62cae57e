"""USB (UVC/V4L2) cameras: finding them, reading frames, capturing on a trigger."""
