"""scikit-image's bundled images as a dataset."""

import pytest
import torch

from deepinv_ext.datasets import SKIMAGE_IMAGES, SkimageImagesDataset


def test_all_bundled_images_load_in_gray_and_colour():
    gray, colour = SkimageImagesDataset(size=24), SkimageImagesDataset(size=24, grayscale=False)
    assert len(gray) == len(SKIMAGE_IMAGES)
    for i in range(len(gray)):
        g, c = gray[i]["x"], colour[i]["x"]
        assert g.shape == (1, 24, 24) and c.shape == (3, 24, 24)
        assert 0 <= g.min() and g.max() <= 1 and g.std() > 0


def test_camera_is_the_scikit_image_camera():
    import skimage.data
    from skimage.transform import resize

    ours = SkimageImagesDataset(size=64, names=("camera",))[0]["x"][0].double()
    reference = torch.from_numpy(resize(skimage.data.camera() / 255.0, (64, 64), anti_aliasing=True))
    assert (ours - reference).abs().mean() < 0.02


def test_unknown_name():
    with pytest.raises(ValueError, match="names"):
        SkimageImagesDataset(names=("lena",))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"names": "camera"}, TypeError, r"names must be a tuple of image names, e.g. \('camera',\)"),
    ({"names": ()}, ValueError, "names must hold at least one of"),
    ({"size": 16.0}, ValueError, "size must be an integer >= 2"),
    ({"size": 1}, ValueError, "size must be an integer >= 2"),
    ({"grayscale": "no"}, TypeError, "grayscale must be True or False"),
    ({"dtype": torch.int64}, TypeError, "dtype must be a real floating torch.dtype"),
])
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        SkimageImagesDataset(**{"size": 8, "names": ("camera",), **kwargs})


def test_index_must_be_an_integer():
    data = SkimageImagesDataset(size=8, names=("camera",))
    with pytest.raises(TypeError, match="index must be an integer"):
        data[0.0]
    with pytest.raises(IndexError):
        data[1]
