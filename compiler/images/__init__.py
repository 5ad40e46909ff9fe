"""Golden VM images: what an image is made of and its key (recipe), baking it with
diskimage-builder into the image cache (bake), and finding baked images again (cache).

A VM installed with `install: {method: image}` is a copy of its golden image plus its seed: an
update bakes a new image (a new key) and reinstalls the VM from it, never changing it in place.
"""
