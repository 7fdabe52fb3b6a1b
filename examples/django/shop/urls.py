from django.urls import path
from orders import views

urlpatterns = [
    path("orders/commit/", views.place_order),
    path("orders/rollback/", views.place_order_then_fail),
]
