"""Boot-media builder: kernel fetch, initramfs (cpio newc) and ext4 rootfs images.

This plays the role upstream's external "fledge" tool plays: everything a fresh
machine needs to boot a real microVM running kestrel, built from Debian packages.
"""
