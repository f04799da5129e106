"""A training run's record: the per-epoch CSV log and the loss / PSNR curves (`figs/<model>/<run>.csv`, `.png`)."""
import csv
import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from utils import atomic_write, atomic_write_text


def write_log(path, history):
    columns = list(dict.fromkeys(k for record in history for k in record))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, text.getvalue())


def plot_curves(path, history, run):
    """Train/val loss and val PSNR per epoch (Agg canvas: no pyplot state, works headless)."""
    epochs = [r["epoch"] for r in history]
    figure = Figure(figsize=(10, 4), tight_layout=True)
    FigureCanvasAgg(figure)
    loss_axis, psnr_axis = figure.subplots(1, 2)
    loss_axis.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    loss_axis.plot(epochs, [r["val_loss"] for r in history], "s-", label="val")
    loss_axis.set(xlabel="epoch", ylabel="loss", title=f"{run}: loss")
    loss_axis.legend()
    psnr_axis.plot(epochs, [r["val_psnr"] for r in history], "o-", color="tab:green")
    psnr_axis.set(xlabel="epoch", ylabel="PSNR (dB)", title=f"{run}: validation PSNR")
    for axis in (loss_axis, psnr_axis):
        axis.grid(alpha=0.3)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
