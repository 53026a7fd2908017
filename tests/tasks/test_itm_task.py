import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.cli.main import main
from tasks.itm.dataset import AllPairsDataset
from tasks.itm.mining import mine_hard_negatives
from tasks.itm.task import ItmConfig, ItmTask

SMOKE = ["--config", "smoke", "--quiet", "train.threads=1"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory):
    task = ItmTask(ItmConfig(synth_size="tiny"), tmp_path_factory.mktemp("itm"), progress=False)
    return task, task.prepare(["train", "dev"])


def test_loader_reads_scan_precomp(prepared) -> None:
    task, data = prepared
    folder = Path(data.info["data_dir"]) / "f30k_precomp"
    images = np.load(folder / "dev_ims.npy")
    captions = (folder / "dev_caps.txt").read_text().splitlines()
    dev = data.splits["dev"]
    assert len(dev) == len(captions) == 5 * len(images)
    batch = dev.__getitems__([7])
    # [positive; negative caption; negative image] for caption 7 of image 1.
    assert batch["label"].tolist() == [1.0, 0.0, 0.0]
    assert batch["image"].tolist()[:2] == [1, 1] and batch["image"][2] != 1
    assert batch["caption"][0] == 7 and batch["caption"][1] // 5 != 1
    np.testing.assert_allclose(batch["features"][0].numpy(), images[1])


def test_all_pairs_order_and_metric(prepared) -> None:
    task, data = prepared
    view = task.evaluation_view(data.splits["dev"])
    assert isinstance(view, AllPairsDataset) and len(view) == 10 * 50
    batch = view.__getitems__([0, 51])
    assert batch["image"].tolist() == [0, 1] and batch["caption"].tolist() == [0, 1]
    # A perfect scorer (own captions score 1, others 0) gets R@1 = 100 both ways.
    rows, columns = np.divmod(np.arange(len(view)), 50)
    scores = (columns // 5 == rows).astype(np.float32)
    metrics = task.evaluate("dev", data.splits["dev"], [{"row": rows, "column": columns, "score": scores}])
    assert metrics["i2t_r1"] == 100.0 and metrics["t2i_r1"] == 100.0 and metrics["rsum"] == 600.0


def test_mining_returns_other_images_ranked_by_the_model(prepared) -> None:
    task, data = prepared
    pairs = data.splits["train"].pairs

    class PreferLowImages(torch.nn.Module):  # scores pairs by -image row
        def forward(self, batch):
            return -batch["image"].float()

    captions, images = mine_hard_negatives(PreferLowImages(), pairs, pool=8, topk=3,
                                           rng=np.random.default_rng(0), device=torch.device("cpu"),
                                           batch_size=64, progress=False)
    assert captions.shape == (pairs.num_images, 3) and images.shape == (pairs.num_captions, 3)
    assert np.all(captions // 5 != np.arange(pairs.num_images)[:, None])  # never the image's own captions
    assert np.all(images != (np.arange(pairs.num_captions) // 5)[:, None])
    assert np.all(np.diff(images, axis=1) >= 0)  # best (lowest row) first


def test_search_retrain_evaluate_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    search, retrain = tmp_path / "search", tmp_path / "retrain"
    assert main(["search", "--task", "itm", "--out", str(search), *SMOKE]) == 0
    assert main(["retrain", "--genotype", str(search / "genotype.json"), "--out", str(retrain), *SMOKE,
                 "train.epochs=2", "task.hard_negative_start_epoch=1", "task.test_split=dev"]) == 0
    summary = json.loads((retrain / "summary.json").read_text())
    assert summary["results_file"].endswith(".npy")
    capsys.readouterr()
    assert main(["evaluate", "--task", "itm", "--json", "--sims", summary["results_file"]]) == 0
    assert json.loads(capsys.readouterr().out)["rsum"] == pytest.approx(summary["final"]["rsum"])


def test_fusion_modes_of_the_matching_head() -> None:
    from tasks.itm.head import MatchingHead

    torch.manual_seed(0)
    text, image = torch.randn(3, 4, 8), torch.randn(3, 5, 8)
    text_keep, image_keep = torch.ones(3, 4, dtype=torch.bool), torch.ones(3, 5, dtype=torch.bool)
    summed = MatchingHead(8, 16, dropout=0.0, fusion="sum").eval()
    product = MatchingHead(8, 16, dropout=0.0, fusion="product").eval()
    product.load_state_dict(summed.state_dict())
    t, i = summed.text_pool(text, text_keep), summed.image_pool(image, image_keep)
    torch.testing.assert_close(summed(text, text_keep, image, image_keep),
                               summed.classifier(summed.norm(t + i)).squeeze(-1))  # MmNas: pooled sum
    torch.testing.assert_close(product(text, text_keep, image, image_keep),
                               summed.classifier(summed.norm(t + i + t * i)).squeeze(-1))
    with pytest.raises(ValueError, match="fusion"):
        MatchingHead(8, 16, fusion="concat")
