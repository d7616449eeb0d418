import secrets

from django.db import migrations, models

import instances.models

RENAMED = {
    "status_change": "instance.status_changed",
    "auto_stop_warning": "instance.auto_stop_warning",
}


def fill_ids_and_event_names(apps, schema_editor):
    """Existing deliveries get a unique id each and the dotted event names."""
    WebhookDelivery = apps.get_model("instances", "WebhookDelivery")
    for old, new in RENAMED.items():
        WebhookDelivery.objects.filter(event=old).update(event=new)
    for pk in WebhookDelivery.objects.filter(delivery_id="").values_list("pk", flat=True):
        WebhookDelivery.objects.filter(pk=pk).update(delivery_id="msg_" + secrets.token_hex(12))


def restore_event_names(apps, schema_editor):
    WebhookDelivery = apps.get_model("instances", "WebhookDelivery")
    for old, new in RENAMED.items():
        WebhookDelivery.objects.filter(event=new).update(event=old)


class Migration(migrations.Migration):

    dependencies = [
        ("instances", "0002_instance_name_unique_while_live"),
    ]

    operations = [
        migrations.AddField(
            model_name="instance",
            name="webhook_sequence",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="webhookdelivery",
            name="delivery_id",
            field=models.CharField(default="", max_length=40),
        ),
        migrations.AddField(
            model_name="webhookdelivery",
            name="sequence",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="webhookdelivery",
            name="held",
            field=models.BooleanField(default=False),
        ),
        migrations.RunPython(fill_ids_and_event_names, restore_event_names),
        migrations.AlterField(
            model_name="webhookdelivery",
            name="delivery_id",
            field=models.CharField(
                default=instances.models.new_delivery_id, max_length=40, unique=True
            ),
        ),
        migrations.AlterField(
            model_name="webhookdelivery",
            name="event",
            field=models.CharField(
                choices=[
                    ("instance.status_changed", "Status Changed"),
                    ("instance.auto_stop_warning", "Auto Stop Warning"),
                ],
                default="instance.status_changed",
                max_length=40,
            ),
        ),
        migrations.AddIndex(
            model_name="webhookdelivery",
            index=models.Index(
                fields=["instance", "state", "sequence"], name="webhook_order_idx"
            ),
        ),
    ]
