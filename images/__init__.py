"""Host-side image builder: recipes → rootfs → disk image, Jetson bundle, balena project.

The builder reads the device's config schema and unit files as data; the device never imports
this package.
"""
