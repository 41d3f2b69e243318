"""A grid of val images with the model's detections, each drawn as tools/predict.py draws
a picture (engine/predict.py: BatchPredictor, draw_instances)."""
import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image

from ..engine.predict import BatchPredictor, draw_instances


def draw_predictions(model, dataset_name, out_path, *, input_format="RGB", aug=None,
                     num_images=8, score_thresh=0.5, scale=2.0, columns=4):
    """Draw detections above `score_thresh` on the first images of a dataset; write a PNG.

    The images go to `model` (channels in `input_format`) resized by `aug` (None: as they
    are), in one batch: they must be of one size (the digits are).
    """
    metadata = MetadataCatalog.get(dataset_name)
    images = [read_image(record["file_name"], format="BGR")
              for record in DatasetCatalog.get(dataset_name)[:num_images]]
    tiles = []
    for image, output in zip(images, BatchPredictor(model, input_format=input_format,
                                                   aug=aug)(images)):
        instances = output["instances"].to("cpu")
        tiles.append(draw_instances(image, instances[instances.scores >= score_thresh], metadata,
                                    scale))
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % columns)
    rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
    cv2.imwrite(str(out_path), np.concatenate(rows, axis=0))
    return out_path
