"""A grid of val images with the model's detections drawn by detectron2's Visualizer."""
import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.utils.visualizer import Visualizer


def _predict(model, image, input_format):
    """Detections for one HxWx3 uint8 image in `input_format` order."""
    tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
    with torch.no_grad():
        return model([{"image": tensor, "height": image.shape[0], "width": image.shape[1]}])[0]


def draw_predictions(model, dataset_name, out_path, *, input_format="RGB", num_images=8,
                     score_thresh=0.5, scale=2.0, columns=4):
    """Draw detections above `score_thresh` on the first images of a dataset; write a PNG."""
    metadata = MetadataCatalog.get(dataset_name)
    records = DatasetCatalog.get(dataset_name)[:num_images]
    model.eval()
    tiles = []
    for record in records:
        image = read_image(record["file_name"], format=input_format)
        instances = _predict(model, image, input_format)["instances"].to("cpu")
        instances = instances[instances.scores >= score_thresh]
        rgb = image if input_format == "RGB" else image[:, :, ::-1]
        drawn = Visualizer(rgb, metadata, scale=scale).draw_instance_predictions(instances)
        tiles.append(drawn.get_image())
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
    cv2.imwrite(str(out_path), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
    return out_path
