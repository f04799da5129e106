"""The optimiser and learning-rate schedule of a training run: parameter groups (no weight decay on
1-D parameters and tokens, audio gates at --gate-lr-mult), AdamW/Adam, cosine, one-cycle or plateau."""
import math

import torch


def audio_gates(network):
    """ASVFI's audio gates (none for other models or with --audio none)."""
    if network.config["model"] != "asvfi" or network.audio is None:
        return []
    return network.audio.gates()


def takes_weight_decay(name, parameter):
    """Decay only weight matrices and kernels: biases, norms, gates, attention time slopes (all
    1-D) and learned tokens are not pulled towards zero (or towards broad attention)."""
    return parameter.ndim >= 2 and not name.rsplit(".", 1)[-1].endswith("token")


def parameter_groups(args, network):
    """Optimiser groups: (decay, no decay) x (the learning rate, gates at `--gate-lr-mult` x it);
    empty ones are left out. With --decay-all the no-decay groups keep their members (a run resumes
    into the same groups) but take the weight decay too."""
    gates = {id(p) for p in audio_gates(network)}
    groups = {}
    for name, parameter in network.named_parameters():
        if not parameter.requires_grad:
            continue
        gate, decay = id(parameter) in gates, takes_weight_decay(name, parameter)
        group = groups.setdefault((gate, decay), {
            "name": ("gates" if gate else "main") + ("" if decay else "_no_decay"), "params": [],
            "lr": float(args.lr) * (args.gate_lr_mult if gate else 1.0)})
        if not decay and not args.decay_all:
            group["weight_decay"] = 0.0  # the decay groups take --weight-decay or the optimiser's default
        group["params"].append(parameter)
    return [groups[key] for key in sorted(groups)]


def build_optimizer(args, network):
    """The optimiser over `parameter_groups`."""
    kinds = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}
    decay = {} if args.weight_decay is None else {"weight_decay": args.weight_decay}
    return kinds[args.optimizer](parameter_groups(args, network), betas=(args.beta1, args.beta2), **decay)


def build_scheduler(args, optimizer, steps_per_epoch):
    """(scheduler or None, steps every batch?). Cosine: once per epoch, from --lr to 0 at --epochs;
    one-cycle (PerVFI): every step over all --epochs; plateau (FLAVR's main.py): the rate halves
    when 6 epochs in a row bring no lower validation loss, patience 5 (step_epoch gives it the loss)."""
    if args.scheduler == "cosine":
        epochs = args.epochs
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: 0.5 * (1 + math.cos(math.pi * min(epoch, epochs) / epochs))), False
    if args.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                                   total_steps=args.epochs * steps_per_epoch,
                                                   anneal_strategy="cos"), True
    if args.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=5), False
    return None, False


def step_epoch(scheduler, val_loss):
    """The end-of-epoch step of a per-epoch schedule; the plateau schedule steps on the validation loss."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_loss)
    else:
        scheduler.step()


def follow_schedule(scheduler, optimizer):
    """After a resume, set the learning rate the cosine curve of the *current* --epochs gives at the
    restored epoch: a run resumed with a larger --epochs continues on the longer curve (the
    one-cycle schedule cannot be stretched; resume_checkpoint refuses that case)."""
    if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * factor(scheduler.last_epoch)
