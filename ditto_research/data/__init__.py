"""Training data of the motion model: prepared clips on disk and the training windows read from them.

    from ditto_research.data import PreparedDataset, TrainingWindows
    dataset = PreparedDataset("DATASET")          # manifest.json + clips/*.npz
    clip = dataset[0]                             # clip["motion"] (n, 265), clip["eye_open"] (n, 2), ...
    windows = TrainingWindows(dataset, seed=0)    # the original training code's items, item for item

Modules: ``clip`` (one clip's arrays and metadata, atomic save / load), ``dataset`` (the folder, its
manifest and format version, the writer a preparation job adds clips with), ``windows`` (80-frame items and
their LMDM conditions).
"""

from ditto_research.data.clip import CLIP_ARRAYS, PreparedClip, load_clip, save_clip
from ditto_research.data.dataset import FORMAT_VERSION, DatasetWriter, PreparedDataset
from ditto_research.data.windows import TrainingWindows

__all__ = [
    "CLIP_ARRAYS",
    "FORMAT_VERSION",
    "DatasetWriter",
    "PreparedClip",
    "PreparedDataset",
    "TrainingWindows",
    "load_clip",
    "save_clip",
]
