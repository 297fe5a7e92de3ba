"""The Lightning strategy of the protection loop on several devices.

Protection shards samples across ranks and optimizes data, not parameters: PGD differentiates the loss with
respect to pixels, and the only parameters that train are the surrogates' adapters, whose gradients the module
averages through the strategy's ``reduce``. So the module is not wrapped in DistributedDataParallel (which refuses a
module without trainable parameters and would expect every forward pass to end in a parameter backward); launching,
the process group, devices, barriers and collectives stay Lightning's DDP.
"""
from __future__ import annotations

from lightning.pytorch.strategies import DDPStrategy

from mmguard.config.sections import TrainerParams
from mmguard.core.errors import UserError


class DataShardingDDP(DDPStrategy):
    strategy_name = "mmguard_data_sharding_ddp"

    def configure_ddp(self) -> None:  # no DistributedDataParallel wrapper: see the module docstring
        pass


def several_processes(params: TrainerParams) -> bool:
    devices = params.devices
    one_device = devices == 1 or (isinstance(devices, list) and len(devices) == 1)
    return params.num_nodes > 1 or not one_device


def protection_strategy(params: TrainerParams):
    """The strategy protection runs with: Lightning's own on one device, sample-sharding DDP on several."""
    if not several_processes(params):
        return params.strategy
    if params.strategy not in ("auto", "ddp"):
        raise UserError(f"key 'trainer.strategy': protection on several devices runs with 'ddp' (samples are "
                        f"sharded across processes), not '{params.strategy}'")
    return DataShardingDDP()


def finetune_strategy(params: TrainerParams):
    """The strategy a victim fine-tunes with: Lightning's own on one device; on several, DDP that tolerates
    parameters a forward pass leaves unused (a frozen tower's pooler, a layer an LVLM skips), which every family
    has somewhere. Other strategies (FSDP, DeepSpeed) are passed through as the recipe names them."""
    if not several_processes(params) or params.strategy not in ("auto", "ddp"):
        return params.strategy
    return DDPStrategy(find_unused_parameters=True)
