"""moto's EC2 server on loopback, for the EBS tests: the modules reach it through endpoint_url.

Nothing leaves the machine: the server binds 127.0.0.1 and the credentials are moto's dummies, set in the
environment so that the boto3 inside ansible-playbook's module processes finds them too.
"""

import os

# Without moto's thousands of sample AMIs and their snapshots every listing is fast; set before moto loads.
os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"

import boto3  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

AWS_ENVIRONMENT = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
REGION = "us-east-1"
IMAGE = "ami-12c6146b"  # any id: moto runs instances of images it does not list
COPY_REGION = "eu-west-1"


class MotoEc2:
    def __init__(self):
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint_url = "http://%s:%d" % (host, port)

    def client(self, region=REGION):
        return boto3.client("ec2", endpoint_url=self.endpoint_url, region_name=region,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def instance(self, data_devices=("/dev/sdf", "/dev/sdg", "/dev/sdh"), zone="us-east-1a"):
        """An instance with a boot volume and one data volume per device: (instance id, {device: volume id})."""
        ec2 = self.client()
        reply = ec2.run_instances(ImageId=IMAGE, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                                  Placement={"AvailabilityZone": zone},
                                  BlockDeviceMappings=[{"DeviceName": d, "Ebs": {"VolumeSize": 8}}
                                                       for d in data_devices])
        instance_id = reply["Instances"][0]["InstanceId"]
        described = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
        volumes = dict((m["DeviceName"], m["Ebs"]["VolumeId"]) for m in described["BlockDeviceMappings"]
                       if m["DeviceName"] in data_devices)
        return instance_id, volumes

    def labelled(self, label, region=REGION):
        """Snapshots tagged with ``label``, each as {id, tags}."""
        pages = self.client(region).get_paginator("describe_snapshots").paginate(
            OwnerIds=["self"], Filters=[{"Name": "tag:dbops:backup-label", "Values": [label]}])
        return [{"id": s["SnapshotId"], "volume": s.get("VolumeId"), "state": s["State"],
                 "tags": dict((t["Key"], t["Value"]) for t in s.get("Tags", []))}
                for page in pages for s in page["Snapshots"]]

    def stop(self):
        self.server.stop()


def set_environment():
    """Put moto's dummy credentials in this process's environment (inherited by ansible-playbook); the old values."""
    old = dict((key, os.environ.get(key)) for key in AWS_ENVIRONMENT)
    os.environ.update(AWS_ENVIRONMENT)
    return old


def restore_environment(old):
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
