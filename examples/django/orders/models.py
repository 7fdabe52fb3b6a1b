from django.db import models


class Order(models.Model):
    customer_id = models.CharField(max_length=150)
    total_cents = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
