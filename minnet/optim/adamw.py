"""AdamW: :class:`~minnet.optim.adam.Adam` with decoupled weight decay and PyTorch's AdamW
defaults (``torch.optim.AdamW``); its rule and reference are Adam's."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from minnet.nn import Parameter
from minnet.optim.adam import Adam
from minnet.optim.optimizer import TorchOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["AdamW"]


class AdamW(Adam):
    r"""Adam with decoupled weight decay: PyTorch's ``torch.optim.AdamW``.

    Exactly :class:`Adam` with ``decoupled_weight_decay=True`` and ``weight_decay=1e-2`` by
    default; with ``t``, ``V_hat``, ``S_hat`` as in :class:`Adam`:

    .. code-block:: text

        param = param * (1 - lr * weight_decay)          (before the moments are updated)
        param = param - lr * V_hat / (sqrt(S_hat) + eps)  (eps outside the root, after bias
                                                            correction; eps_mode moves it)

    Args are :class:`Adam`'s; ``eps_mode`` and ``amsgrad_max`` work as there.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        eps_mode: str = "outside",
        amsgrad_max: str = "raw",
        **options: Unpack[TorchOptions],
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True, eps_mode=eps_mode, amsgrad_max=amsgrad_max,
                         **options)  # fmt: skip
