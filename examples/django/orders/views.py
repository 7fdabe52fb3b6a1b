"""Two views that place an order and enqueue an `order_placed` event in the same transaction.

`place_order` commits: the event is stored in Redis once the order is, and a worker delivers it.
`place_order_then_fail` fails after enqueueing: the transaction rolls back, the order is not
saved, and neither is the event, though `enqueue_track` returned its id.
"""

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

import cio_worker

from .models import Order


class PaymentDeclined(Exception):
    pass


def _place(request: HttpRequest) -> tuple[Order, str]:
    customer = request.POST.get("customer", "customer-1")
    order = Order.objects.create(customer_id=customer, total_cents=4200)
    job_id = cio_worker.enqueue_track(
        customer, "order_placed", {"order_id": order.pk, "total_cents": order.total_cents}
    )
    return order, job_id


@csrf_exempt
@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    with transaction.atomic():
        order, job_id = _place(request)
    return JsonResponse({"order_id": order.pk, "job_id": job_id, "committed": True})


@csrf_exempt
@require_POST
def place_order_then_fail(request: HttpRequest) -> JsonResponse:
    try:
        with transaction.atomic():
            _, job_id = _place(request)
            raise PaymentDeclined
    except PaymentDeclined:
        pass
    return JsonResponse({"job_id": job_id, "committed": False}, status=402)
